-- Placeholder on this branch only: migration 0010 is reserved for another helper of this
-- session (decisions D2). Drop this file when merging that helper's 0010.
SELECT 1;
