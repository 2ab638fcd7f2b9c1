// The reference page of one contract (/docs/{api}/{version}): Swagger UI on the contract named in #ui's data-url.
// A file, not an inline script: the page's CSP has no 'unsafe-inline'.
"use strict";
window.ui = SwaggerUIBundle({url: document.getElementById("ui").dataset.url, dom_id: "#ui", deepLinking: true});
