DROP TRIGGER tasks_webhook ON tasks;
DROP FUNCTION hetuflow_task_webhook();
DROP TABLE webhook_deliveries;
ALTER TABLE cron_jobs DROP COLUMN webhook_url;
ALTER TABLE tasks DROP COLUMN webhook_url;
