"""The product inside a PACS: the DICOM node, its spool and the results it stores."""
