"""Pages and figures made from folders: plots and the model card. No model is loaded here."""
