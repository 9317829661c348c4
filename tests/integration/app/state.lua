-- state.lua: a plain module shared by the fixture files through
-- `require "state"`. It registers no routes. The server also loads it as a
-- script (every *.lua in the directory is loaded, in name order); that must
-- be harmless.
return {
    load_order = {},    -- file names, appended as each fixture file loads
    trace = {},         -- middleware/handler order for the current /mw/ request
}
