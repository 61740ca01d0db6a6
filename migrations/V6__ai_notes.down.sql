-- Undo V6: drop pastoral notes (indexes, trigger and identity sequence go with it).

DROP TABLE pastoral_notes;
