-- A move that did not switch the registry can be claimed for undoing: phase 'undoing'.
-- The switch applies only to a move still 'copying' and locks the journal row first, so
-- once an undo has claimed a move, no registry switch still on its way can apply, and
-- the old copy is never brought back after the registry has named the new one.
-- Runs with search_path set to the registry schema.
ALTER TABLE tenant_moves DROP CONSTRAINT IF EXISTS tenant_moves_phase_check;
ALTER TABLE tenant_moves ADD CONSTRAINT tenant_moves_phase_check
    CHECK (phase IN ('copying', 'switched', 'undoing'));
