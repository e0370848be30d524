ALTER TABLE agents DROP COLUMN drained;
