ALTER TABLE attempts
    DROP COLUMN log_truncated,
    DROP COLUMN log_lines,
    DROP COLUMN log_bytes;
