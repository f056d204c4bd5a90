"""The HTTP side of baton: the API of `baton serve`."""

from baton._extras import require

# Before any of its modules imports starlette or FastAPI: without the extra, one error that names it.
require("serve", "baton.web")
