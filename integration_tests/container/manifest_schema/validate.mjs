// Validates Kubernetes objects against the Kubernetes API's OpenAPI schemas,
// offline, with the npm package kubernetes-models: its per-kind validators
// (types, enums, required fields) and, since those accept any unknown field
// as the API server's non-strict mode does, a strict check that every field
// is one the API defines (a misspelt `runAsNonRot` would otherwise pass and
// be dropped). The field lists come from the package's TypeScript
// declarations, which it generates from the same OpenAPI document.
//
//   node validate.mjs NODE_MODULES_PARENT < objects.json
// Reads a JSON array of objects on stdin; prints one line per object
// ("ok ..." or "invalid ...: why") and exits 1 if any is invalid or of a kind
// it has no schema for. NODE_MODULES_PARENT is where `npm ci` installed this
// directory's package-lock.json (test_scaleout.py installs it outside the
// clone).
import { createRequire } from "node:module";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";

const root = process.argv[2];
const modules = path.join(root, "node_modules");
const require = createRequire(path.join(root, "package.json"));

// The declaration file of a module path as the declarations import it.
function declarationFile(spec, fromFile) {
  const base = spec.startsWith(".") ? path.resolve(path.dirname(fromFile), spec)
                                    : path.join(modules, spec);
  return base + ".d.ts";
}

// {props: {name: type text}, imports: {type name: file}} of the one
// interface a declaration file exports, or null (a type alias such as
// IntOrString, which has no fields).
const interfaces = new Map();
function loadInterface(file) {
  if (interfaces.has(file)) return interfaces.get(file);
  let result = null;
  if (existsSync(file)) {
    const text = readFileSync(file, "utf8");
    const imports = {};
    for (const m of text.matchAll(/^import \{ ([^}]+) \} from "([^"]+)";$/gm)) {
      for (const name of m[1].split(",").map((s) => s.trim())) {
        imports[name] = declarationFile(m[2], file);
      }
    }
    const body = text.match(/^export interface \w+(?: extends ([\w, ]+))? \{\n([\s\S]*?)^\}/m);
    if (body) {
      const props = {};
      // Maps are declared over three lines: join them into one.
      const lines = body[2].replace(/\{\s*\[key: string\]: ([^;]+);\s*\}/g, "{ [key: string]: $1 }");
      for (const m of lines.matchAll(/^ {4}"([^"]+)"\??: (.*);$/gm)) props[m[1]] = m[2];
      // TypeMeta: apiVersion and kind.
      if (body[1] && body[1].includes("TypeMeta")) {
        props.apiVersion ??= "string";
        props.kind ??= "string";
      }
      result = { props, imports };
    }
  }
  interfaces.set(file, result);
  return result;
}

// Unknown fields of value (typed typeText in iface's file), as JSON paths.
function unknownFields(value, typeText, iface, where, out) {
  if (value === null || typeof value !== "object") return;
  let m;
  if ((m = typeText.match(/^Array<(.+)>$/))) {
    if (Array.isArray(value)) value.forEach((v, i) => unknownFields(v, m[1], iface, `${where}/${i}`, out));
    return;
  }
  if ((m = typeText.match(/^\{\s*\[key: string\]: (.+?);?\s*\}$/))) {
    for (const [k, v] of Object.entries(value)) unknownFields(v, m[1], iface, `${where}/${k}`, out);
    return;
  }
  const file = iface.imports[typeText];
  if (!file) return;  // a primitive, a union of literals, or untyped (`any`)
  checkObject(value, loadInterface(file), where, out);
}

function checkObject(value, iface, where, out) {
  if (!iface || Array.isArray(value)) return;
  for (const [k, v] of Object.entries(value)) {
    if (!(k in iface.props)) {
      out.push(`${where}/${k}`);
    } else {
      unknownFields(v, iface.props[k], iface, `${where}/${k}`, out);
    }
  }
}

const objects = JSON.parse(readFileSync(0, "utf8"));
let bad = 0;
for (const obj of objects) {
  const name = `${obj.apiVersion} ${obj.kind} ${obj.metadata?.name}`;
  // The core group ("v1") lives at kubernetes-models/v1, the others at
  // kubernetes-models/GROUP/VERSION.
  let Model;
  try {
    Model = require(`kubernetes-models/${obj.apiVersion}`)[obj.kind];
  } catch (e) {
    Model = undefined;
  }
  const iface = loadInterface(path.join(modules, "kubernetes-models", obj.apiVersion, `${obj.kind}.d.ts`));
  if (typeof Model !== "function" || !iface) {
    console.log(`invalid ${name}: no schema for this apiVersion and kind`);
    bad++;
    continue;
  }
  try {
    new Model(obj).validate();
  } catch (e) {
    console.log(`invalid ${name}: ${e.message}`);
    bad++;
    continue;
  }
  const unknown = [];
  checkObject(obj, iface, "data", unknown);
  if (unknown.length) {
    console.log(`invalid ${name}: unknown fields ${unknown.join(", ")}`);
    bad++;
    continue;
  }
  console.log(`ok ${name}`);
}
process.exit(bad ? 1 : 0);
