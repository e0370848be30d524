DROP TABLE cron_ticks;
DROP TABLE task_logs;
DROP TABLE attempts;
DROP TABLE tasks;
DROP TABLE cron_jobs;
DROP TABLE agents;
