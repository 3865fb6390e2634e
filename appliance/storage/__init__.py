"""The SQLite engine every database here runs on (the box's and the reference receiver's)."""
