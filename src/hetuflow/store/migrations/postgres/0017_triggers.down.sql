DROP TABLE event_workflows;
DROP TABLE event_tasks;
DROP TABLE events;
DROP TABLE hooks;
DROP TABLE triggers;
