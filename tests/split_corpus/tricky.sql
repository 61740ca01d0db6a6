-- A corpus of statements that are easy to split wrongly; tests/psql_split.rs checks
-- that tenantctl splits it exactly as psql does. It must not contain transaction
-- control: the comparison runs it inside an aborted transaction.

-- semicolons in strings, identifiers and comments
SELECT 'a;b', 'it''s; fine', "odd;""name" FROM t; -- trailing; comment 'x
SELECT /* inline; 'comment' */ 1; /* after; */ SELECT 2;
/* a block comment; /* nested; */ still; "inside" 'too */ SELECT 3;
SELECT 4 /* end of statement comment */;

-- E'' strings with escaped quotes and backslashes
SELECT E'it\'s; escaped', E'back\\slash;', e'\\', E'\x41;\101', 'plain\';
SELECT E'line\nbreak;' AS x, U&'d\0061t\+000061;' AS y, U&"d;" AS z;
SELECT B'0101', X'1F;', N'national;';
SELECT name'not an E string\' FROM t;

-- dollar quotes: tags, nesting, near misses, parameters
DO $outer$
BEGIN
  RAISE NOTICE 'dollar; body';
  PERFORM $$ nested; $x$ not the end; $outer not either; $$;
END
$outer$;
DO $$ BEGIN PERFORM $inner$ ; $inner$; END $$;
CREATE FUNCTION f1(a int) RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE
  s text := $q$;$q$ || $$;$$;
BEGIN
  IF a > 0 THEN RETURN s; END IF;
  RETURN $fn2$ $fn $fn2$;
END
$fn$;
PREPARE p1 (int, text) AS SELECT $1, $2 || ';';
SELECT a$b$c, $1x FROM t$1;
SELECT $_tag1$;$_tag1$, $ZZ$ $zz$ ; $ZZ$;
SELECT 1$a$ $a$ ;

-- parentheses hold semicolons
CREATE RULE r1 AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); DELETE FROM b WHERE c = ';');
CREATE RULE r2 AS ON UPDATE TO t DO INSTEAD (NOTIFY x; NOTIFY y);
SELECT (1));

-- SQL-standard function bodies
CREATE FUNCTION f2(a int) RETURNS int LANGUAGE sql
BEGIN ATOMIC
  SELECT CASE WHEN a > 0 THEN 1 ELSE 2 END;
  SELECT a + 1;
END;
CREATE OR REPLACE PROCEDURE p2(x int) LANGUAGE sql
BEGIN ATOMIC
  INSERT INTO t VALUES (x);
  INSERT INTO t SELECT CASE x WHEN 1 THEN 2 END;
  UPDATE t SET a = 1;
END;
create or replace function f3() returns int language sql begin atomic; select 1; end;
CREATE FUNCTION f4() RETURNS int AS 'begin; end;' LANGUAGE sql;
CREATE TABLE begin_end (begin int, "end" int, "case" text);
SELECT begin, "end" FROM begin_end;
CREATE OR REPLACE FUNCTION f5() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;

-- operators running into comments, odd spacing
SELECT 1+--comment;
2;
SELECT 3*/**/4;
SELECT 5 -/* c */- 6  ;
SELECT 'a'
  'continued; string';


;;;
SELECT 'multi
line; string',
"multi
line; identifier";
SELECT $$
;
$$;
-- an unclosed parenthesis holds everything after it, as in psql
SELECT ((1); SELECT 2;
