-- eventcore schema 6: reserved for the stream-lifecycle migration (issue 14 §2).
--
-- PLACEHOLDER on the wip/shred branch only, so that 0007 applies (versions are 1..N
-- without gaps). The integrator drops this file when the lifecycle branch's 0006 lands.
SELECT 1;
