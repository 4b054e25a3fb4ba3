-- A nightly export is recognised by the day it covers, no longer by an id derived from that day:
-- export ids are random, so that nobody can guess the id of last night's export. A repeated fire
-- for the same night finds this index taken and starts nothing.
CREATE UNIQUE INDEX exports_one_per_night ON exports (range_from, range_to)
    WHERE requested_by = 'nightly-orders-export';
