package e2ee

import "embed"

// Browser holds the JavaScript side of this package, served to the page
// under /e2ee/: sframe.js (SFrame on WebCrypto), vectors.js (the test-vector
// runner), keys.js (the key agreement in the page) and worker.js (the
// encoded-transform worker).
//
//go:embed *.js
var Browser embed.FS
