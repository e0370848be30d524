ALTER TABLE attempts DROP COLUMN log_truncated;
ALTER TABLE attempts DROP COLUMN log_lines;
ALTER TABLE attempts DROP COLUMN log_bytes;
