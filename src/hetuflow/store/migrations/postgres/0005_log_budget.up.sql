-- Each attempt keeps what its stored log lines cost (bytes + a fixed overhead per line), how
-- many there are, and whether the budget ran out: the budget is charged in the database, so it
-- holds across nodes and restarts (docs/guarantees.md, Logs).
ALTER TABLE attempts
    ADD COLUMN log_bytes bigint NOT NULL DEFAULT 0,
    ADD COLUMN log_lines integer NOT NULL DEFAULT 0,
    ADD COLUMN log_truncated boolean NOT NULL DEFAULT false;
