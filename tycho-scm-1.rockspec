rockspec_format = "3.0"
package = "tycho"
version = "scm-1"
source = {
   url = "git+file://.",  -- built from a checkout with `luarocks make`
}
description = {
   summary = "A Lua-scriptable HTTP/1.1 application server written in C",
   detailed = [[
Tycho serves the Lua route scripts in a directory over HTTP/1.1: a C core
(libevent, http-parser, LuaJIT) owns sockets, framing, pooling and limits;
handlers are Lua. Build dependencies are Debian packages: libevent-dev,
libhttp-parser-dev, libluajit2-5.1-dev, lua-cjson.
]],
}
dependencies = {
   "lua >= 5.1, < 5.2",
}
build = {
   type = "make",
   build_target = "build",
   install_target = "install",
   install_variables = {
      PREFIX = "$(PREFIX)",
   },
}
test = {
   type = "command",
   command = "make test",
}
