DROP FUNCTION hetuflow_place_at_create(bigint, int, int, text[], timestamptz);
