-- eventcore schema 10: reserved (a placeholder of this branch, changes nothing).
--
-- Version 10 is another branch's migration; this file only keeps the versions of this
-- branch dense (1..N) so that schema 11 applies. The merge replaces it with the real 10.
SELECT 1;
