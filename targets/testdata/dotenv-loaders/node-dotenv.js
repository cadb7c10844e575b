// Records how Node's dotenv reads each file of the corpus, for
// targets/envloaders_test.go (which must not need node to run).
//
// Usage: node node-dotenv.js (from this directory, with dotenv installed;
// generate.sh does all of it). Writes node-dotenv.json: for each file in
// corpus/, the SHA-256 of its bytes and the variables dotenv.parse reads,
// with the default parser ("parse") and with { fast: true } ("fast").
'use strict'

const crypto = require('crypto')
const fs = require('fs')
const path = require('path')
const dotenv = require('dotenv')

function reading (fn) {
  try {
    return { vars: fn() }
  } catch (e) {
    return { error: String(e && e.message) }
  }
}

const dir = path.join(__dirname, 'corpus')
const files = {}
for (const name of fs.readdirSync(dir).sort()) {
  const buf = fs.readFileSync(path.join(dir, name))
  files[name] = {
    sha256: crypto.createHash('sha256').update(buf).digest('hex'),
    parse: reading(() => dotenv.parse(buf)),
    fast: reading(() => dotenv.parse(buf, { fast: true }))
  }
}
const out = {
  dotenv: require('dotenv/package.json').version,
  node: process.version,
  files
}
fs.writeFileSync(path.join(__dirname, 'node-dotenv.json'), JSON.stringify(out, null, 2) + '\n')
console.log(`node-dotenv.json: ${Object.keys(files).length} files read with dotenv ${out.dotenv}`)
