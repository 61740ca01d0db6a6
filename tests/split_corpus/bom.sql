-- starts with a byte-order mark
SELECT 1;
SELECT 'é;ü';
