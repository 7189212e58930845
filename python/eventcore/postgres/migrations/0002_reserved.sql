-- eventcore schema 2: reserved for the projection checkpoint tables, which are developed
-- on another branch; this placeholder keeps the versions 1..N without a gap until they
-- land (delete this file when 0002_projection_checkpoints.sql is merged).
SELECT 1;
