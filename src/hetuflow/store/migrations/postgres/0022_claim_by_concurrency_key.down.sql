DROP INDEX tasks_claim_keyed;
DROP INDEX tasks_claim_unkeyed;
