-- The claim's two streams (store/_pg_tasks.py, docs/benchmarks.md "Concurrency keys"): once a
-- claim has found keys full it reads the pending unkeyed tasks in claim order, and for each
-- concurrency key that still has room the first of its pending tasks in claim order, without
-- reading the tasks of full keys.
CREATE INDEX tasks_claim_unkeyed ON tasks (claim_key, id)
    WHERE status = 'pending' AND concurrency_key IS NULL;
CREATE INDEX tasks_claim_keyed ON tasks (concurrency_key, claim_key, id)
    WHERE status = 'pending' AND concurrency_key IS NOT NULL;
