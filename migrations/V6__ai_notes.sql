-- V6: pastoral care notes with full-text search and an embedding vector
-- for the AI "similar situations" feature (plain real[]; no pgvector extension).

CREATE TABLE pastoral_notes (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- opaque id exposed in URLs and to the AI service; never expose the bigint
    public_id        uuid NOT NULL DEFAULT gen_random_uuid() CONSTRAINT pastoral_notes_public_id_key UNIQUE,
    member_id        bigint NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    author           text NOT NULL,
    visibility       text NOT NULL DEFAULT 'pastors'
        CHECK (visibility IN ('author', 'pastors', 'care_team')),
    title            text,
    body             text NOT NULL,
    -- kept in sync by PostgreSQL itself; the app never writes it
    search_vector    tsvector GENERATED ALWAYS AS (to_tsvector('english', coalesce(body, ''))) STORED,
    embedding        real[],
    embedding_model  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- one-dimensional vectors only; and a model name must accompany any embedding
    CONSTRAINT pastoral_notes_embedding_check CHECK (
        embedding IS NULL
        OR (array_ndims(embedding) = 1 AND embedding_model IS NOT NULL)
    )
);

CREATE INDEX pastoral_notes_search_vector_idx ON pastoral_notes USING gin (search_vector);
CREATE INDEX pastoral_notes_member_created_idx ON pastoral_notes (member_id, created_at DESC);

CREATE TRIGGER pastoral_notes_set_updated_at
    BEFORE UPDATE ON pastoral_notes
    FOR EACH ROW
    EXECUTE FUNCTION set_updated_at();
