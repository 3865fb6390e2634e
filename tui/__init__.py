"""The venue console (Textual). Arrives with the console issue."""
