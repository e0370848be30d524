ALTER TABLE tasks DROP COLUMN replay_of;
