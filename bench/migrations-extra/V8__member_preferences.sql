-- Communication preferences on members, with a backfill.
ALTER TABLE members ADD COLUMN prefers_sms boolean NOT NULL DEFAULT false;
ALTER TABLE members ADD COLUMN language text NOT NULL DEFAULT 'en';
ALTER TABLE members ADD COLUMN tags text[] NOT NULL DEFAULT '{}';
CREATE INDEX members_tags_idx ON members USING gin (tags);
UPDATE members SET language = 'en' WHERE language IS NULL;
