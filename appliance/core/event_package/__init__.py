"""The event package (EVENT_PACKAGE.md): the format's one owner, read by the import and written by
the export.

* ``format``: the files, event.json's field names, the CSV columns, the records of a checked package
  and the ``file:line: message`` problem list;
* ``reading``: the container (a folder or a .zip), UTF-8 text, event.json's JSON and the CSV rows;
* ``json_lines``: the line of each key and item of event.json, so a problem points at its line;
* ``validate``: the rules, turning what was read into checked records or problems.

Applying a package to the database is the import's job (``provisioning/event_import.py``).
"""
