DROP TABLE event_workflows;
DROP TABLE event_tasks;
DROP TABLE events;
DROP TABLE hooks;
DROP INDEX triggers_event_key;
DROP TABLE triggers;
