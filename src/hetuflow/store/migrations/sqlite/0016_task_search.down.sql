DROP TRIGGER tasks_search_update;
DROP TRIGGER tasks_search_delete;
DROP TRIGGER tasks_search_insert;
DROP TABLE tasks_search_pending;
DROP TABLE tasks_search;
