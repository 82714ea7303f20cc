-- A line of the exporter's own in the server's log: the reader waits to see it (the log is caught up to here)
-- and its time stamp closes the window. {mark} is a literal the reader composes.
DO $pgarch$BEGIN RAISE LOG {mark}; END$pgarch$
