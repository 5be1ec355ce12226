"""The ground floor: errors a user can fix, what every command line shares, atomic files."""
