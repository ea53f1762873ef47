// The poolwarden worker page: computes the built-in models on WebNN, WebGPU or plain JavaScript
// and answers the bridge over one WebSocket. Protocol: docs/protocol.md (version 2).
// Plain JavaScript, no build step. Numerics mirror poolwarden/workers/models.py exactly.
"use strict";

const PROTOCOL = 2; // the highest version spoken; the welcome names the connection's
const params = new URLSearchParams(location.search);
// Both change once, when a warm spare page is promoted to a connection (the `rebind` message).
let WORKER_ID = params.get("worker") || "";
// The worker's secret for its hello. The worker adds a script over the browser's remote-control
// session (Chromium's private DevTools pipe, Firefox's one BiDi session) that runs before this one
// in every document of the tab (so reloads get it too); the secret is never in the URL. The
// property is read once and deleted. A `token` URL parameter is the fallback (docs/bridge.md).
let TOKEN = takeInjectedSecret() || params.get("token") || "";
const HOOKS = params.get("hooks") === "1";
// Optional: restrict the backends tried (e.g. "js"), for diagnosis.
const ALLOWED = (params.get("backends") || "webnn,webgpu,js").split(",");
const INSTANCE = Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("");
// 4409 (the worker id is live: another socket holds it) is retried with backoff; 4410 (the pool
// declared this page dead) waits for the pool's reload or restart.
const TERMINAL_CLOSE_CODES = new Set([1008, 4400, 4401, 4410]);
const BACKOFF_MIN_MS = 50;
const BACKOFF_MAX_MS = 2000;

const DEFAULT_SEED = 20240917;
const MODEL_KINDS = ["toy-mlp", "matmul"];
const MAX_DIM = 1024;

let ws = null;
let frameVersion = 1; // the version of the socket's tensor frames: its welcome's
let backoffMs = BACKOFF_MIN_MS;
let stopped = false;
let backend = "js";
let capabilities = {};
const models = new Map(); // model name -> {kind, layers: [{inputs, outputs, weight, bias, relu, gpu}], nn}
const testAllocations = [];

function takeInjectedSecret() {
  const secret = globalThis.__poolwardenSecret;
  try {
    delete globalThis.__poolwardenSecret;
  } catch (_) {
    // not configurable: it stays, and is still only ours
  }
  return typeof secret === "string" ? secret : "";
}

function status(text) {
  const el = document.getElementById("status");
  if (el) el.textContent = text;
}

// --- deterministic weights (mulberry32, as in models.py) ---------------------------------------

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a) >>> 0;
    t = ((t + (Math.imul(t ^ (t >>> 7), 61 | t) >>> 0)) >>> 0) ^ t;
    return (t ^ (t >>> 14)) >>> 0;
  };
}

function draw(next, count, scale) {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = ((next() >>> 8) / 16777216 - 0.5) * scale;
  return out;
}

class InputError extends Error {}
class UnknownModelError extends Error {}
class GpuError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

function buildLayers(kind, options) {
  if (!MODEL_KINDS.includes(kind)) throw new UnknownModelError(`no built-in model kind '${kind}'`);
  const allowed = kind === "matmul" ? ["seed", "k", "n"] : ["seed"];
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) throw new InputError(`${kind}: unknown load option '${key}'`);
  }
  const intOption = (key, dflt, lo, hi) => {
    const v = key in options ? options[key] : dflt;
    if (!Number.isInteger(v) || v < lo || v > hi) throw new InputError(`${kind}: option '${key}' out of range`);
    return v;
  };
  const next = mulberry32(intOption("seed", DEFAULT_SEED, -(2 ** 53), 2 ** 53));
  if (kind === "toy-mlp") {
    return [
      { inputs: 16, outputs: 32, weight: draw(next, 16 * 32, 0.5), bias: draw(next, 32, 0.125), relu: true },
      { inputs: 32, outputs: 4, weight: draw(next, 32 * 4, 0.5), bias: draw(next, 4, 0.125), relu: false },
    ];
  }
  const k = intOption("k", 64, 1, MAX_DIM);
  const n = intOption("n", 64, 1, MAX_DIM);
  return [{ inputs: k, outputs: n, weight: draw(next, k * n, 1.0), bias: new Float32Array(n), relu: false }];
}

// --- the JavaScript backend ----------------------------------------------------------------------

function denseJs(x, batch, layer) {
  const { inputs, outputs, weight, bias, relu } = layer;
  const y = new Float32Array(batch * outputs);
  for (let r = 0; r < batch; r++) {
    for (let c = 0; c < outputs; c++) {
      let acc = bias[c];
      for (let i = 0; i < inputs; i++) acc += x[r * inputs + i] * weight[i * outputs + c];
      y[r * outputs + c] = relu && acc < 0 ? 0 : acc;
    }
  }
  return y;
}

function runJs(model, x, batch) {
  let out = x;
  for (const layer of model.layers) out = denseJs(out, batch, layer);
  return out;
}

// --- the WebGPU backend --------------------------------------------------------------------------

const DENSE_WGSL = `
struct Dims { batch: u32, inputs: u32, outputs: u32, relu: u32 }
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let idx = gid.x;
  if (idx >= dims.batch * dims.outputs) { return; }
  let row = idx / dims.outputs;
  let col = idx % dims.outputs;
  var acc = b[col];
  for (var i = 0u; i < dims.inputs; i = i + 1u) {
    acc = acc + x[row * dims.inputs + i] * w[i * dims.outputs + col];
  }
  if (dims.relu == 1u) { acc = max(acc, 0.0); }
  y[idx] = acc;
}`;

const gpu = { adapter: null, device: null, pipeline: null, lost: null, recreating: null, bufferBytes: 0 };

function adapterInfo(adapter) {
  const info = adapter.info || {};
  const limits = {};
  for (const key in adapter.limits) limits[key] = adapter.limits[key];
  const fallback = info.isFallbackAdapter !== undefined ? info.isFallbackAdapter : adapter.isFallbackAdapter;
  return {
    available: true,
    vendor: info.vendor || "",
    architecture: info.architecture || "",
    device: info.device || "",
    description: info.description || "",
    isFallbackAdapter: Boolean(fallback),
    features: Array.from(adapter.features || []),
    limits,
  };
}

async function createDevice() {
  if (!navigator.gpu) throw new Error("navigator.gpu is missing");
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) throw new Error("requestAdapter() returned null");
  const device = await adapter.requestDevice();
  const module = device.createShaderModule({ code: DENSE_WGSL });
  const pipeline = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
  gpu.adapter = adapter;
  gpu.device = device;
  gpu.pipeline = pipeline;
  gpu.bufferBytes = 0;
  device.onuncapturederror = (ev) => {
    const kind = ev.error instanceof GPUOutOfMemoryError ? "out_of_memory" : "validation";
    send({ type: "error", id: null, kind, message: `uncaptured GPU error: ${ev.error.message}` });
  };
  gpu.lost = device.lost.then((info) => {
    if (gpu.device !== device) return info;
    gpu.device = null;
    send({ type: "error", id: null, kind: "device_lost", message: `GPU device lost (${info.reason}): ${info.message}` });
    log("warn", "GPU device lost; recreating it");
    recreateDevice();
    return info;
  });
  for (const model of models.values()) uploadModel(model);
  return device;
}

function recreateDevice() {
  if (!gpu.recreating) {
    gpu.recreating = createDevice()
      .then(() => log("info", "GPU device recreated"))
      .catch((err) => {
        // Nothing works on the GPU any more: the JavaScript path keeps the page serving.
        backend = "js";
        log("error", `cannot recreate the GPU device (${err}); falling back to js`);
      })
      .finally(() => {
        gpu.recreating = null;
      });
  }
  return gpu.recreating;
}

async function withErrorScopes(device, body) {
  device.pushErrorScope("out-of-memory");
  device.pushErrorScope("validation");
  let result;
  let thrown = null;
  try {
    result = await body();
  } catch (err) {
    thrown = err;
  }
  // Both pops are issued at once (they pop in call order): one round trip to the GPU process,
  // not two, on every inference and model load.
  const [validation, oom] = await Promise.all([device.popErrorScope(), device.popErrorScope()]);
  if (oom) throw new GpuError("out_of_memory", oom.message);
  if (validation) throw new GpuError("validation", validation.message);
  if (thrown) throw thrown;
  return result;
}

function storageBuffer(device, data, usage) {
  const buffer = device.createBuffer({ size: Math.max(16, data.byteLength), usage, mappedAtCreation: true });
  new Float32Array(buffer.getMappedRange()).set(data);
  buffer.unmap();
  return buffer;
}

function uploadModel(model) {
  const device = gpu.device;
  if (!device) return;
  for (const layer of model.layers) {
    const usage = GPUBufferUsage.STORAGE;
    layer.gpu = { device, weight: storageBuffer(device, layer.weight, usage), bias: storageBuffer(device, layer.bias, usage) };
    gpu.bufferBytes += layer.weight.byteLength + layer.bias.byteLength;
  }
}

function releaseModel(model) {
  for (const layer of model.layers) {
    if (layer.gpu && layer.gpu.device === gpu.device) {
      layer.gpu.weight.destroy();
      layer.gpu.bias.destroy();
      gpu.bufferBytes -= layer.weight.byteLength + layer.bias.byteLength;
    }
    layer.gpu = null;
  }
}

async function runGpu(model, x, batch) {
  if (!gpu.device) await recreateDevice();
  const device = gpu.device;
  if (!device) throw new GpuError("device_lost", "no GPU device");
  if (model.layers.some((l) => !l.gpu || l.gpu.device !== device)) {
    releaseModel(model);
    uploadModel(model);
  }
  const lost = gpu.lost;
  const temps = [];
  const work = withErrorScopes(device, async () => {
    const S = GPUBufferUsage.STORAGE;
    let current = storageBuffer(device, x, S);
    temps.push(current);
    const encoder = device.createCommandEncoder();
    let outBytes = 0;
    for (const layer of model.layers) {
      outBytes = batch * layer.outputs * 4;
      const y = device.createBuffer({ size: Math.max(16, outBytes), usage: S | GPUBufferUsage.COPY_SRC });
      const dims = device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
      device.queue.writeBuffer(dims, 0, new Uint32Array([batch, layer.inputs, layer.outputs, layer.relu ? 1 : 0]));
      temps.push(y, dims);
      const bind = device.createBindGroup({
        layout: gpu.pipeline.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: dims } },
          { binding: 1, resource: { buffer: current } },
          { binding: 2, resource: { buffer: layer.gpu.weight } },
          { binding: 3, resource: { buffer: layer.gpu.bias } },
          { binding: 4, resource: { buffer: y } },
        ],
      });
      const pass = encoder.beginComputePass();
      pass.setPipeline(gpu.pipeline);
      pass.setBindGroup(0, bind);
      pass.dispatchWorkgroups(Math.ceil((batch * layer.outputs) / 64));
      pass.end();
      current = y;
    }
    const read = device.createBuffer({ size: Math.max(16, outBytes), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    temps.push(read);
    encoder.copyBufferToBuffer(current, 0, read, 0, Math.max(16, outBytes));
    device.queue.submit([encoder.finish()]);
    return read;
  });
  try {
    const read = await Promise.race([work, lost.then(() => null)]);
    if (read === null || gpu.device !== device) throw new GpuError("device_lost", "the GPU device was lost during the inference");
    try {
      await read.mapAsync(GPUMapMode.READ);
    } catch (err) {
      if (gpu.device !== device) throw new GpuError("device_lost", `the GPU device was lost: ${err.message}`);
      throw err;
    }
    const out = new Float32Array(read.getMappedRange().slice(0));
    read.unmap();
    return out.subarray(0, batch * model.layers[model.layers.length - 1].outputs);
  } finally {
    for (const t of temps) t.destroy();
  }
}

// --- the WebNN backend -----------------------------------------------------------------------------

const nn = { context: null };

async function createNnContext() {
  if (!navigator.ml) throw new Error("navigator.ml is missing");
  return navigator.ml.createContext();
}

async function runNn(model, x, batch) {
  model.nn = model.nn || new Map();
  let graph = model.nn.get(batch);
  const first = model.layers[0];
  const last = model.layers[model.layers.length - 1];
  if (!graph) {
    const builder = new MLGraphBuilder(nn.context);
    let y = builder.input("input", { dataType: "float32", shape: [batch, first.inputs] });
    for (const layer of model.layers) {
      const w = builder.constant({ dataType: "float32", shape: [layer.inputs, layer.outputs] }, layer.weight);
      const b = builder.constant({ dataType: "float32", shape: [layer.outputs] }, layer.bias);
      y = builder.add(builder.matmul(y, w), b);
      if (layer.relu) y = builder.relu(y);
    }
    graph = await builder.build({ output: y });
    model.nn.set(batch, graph);
  }
  const inT = await nn.context.createTensor({ dataType: "float32", shape: [batch, first.inputs], writable: true });
  const outT = await nn.context.createTensor({ dataType: "float32", shape: [batch, last.outputs], readable: true });
  try {
    nn.context.writeTensor(inT, x);
    nn.context.dispatch(graph, { input: inT }, { output: outT });
    return new Float32Array(await nn.context.readTensor(outT));
  } finally {
    inT.destroy();
    outT.destroy();
  }
}

// --- choosing a backend by what actually works ------------------------------------------------------

function probeModel() {
  return { kind: "probe", layers: [{ inputs: 2, outputs: 2, weight: new Float32Array([1, 2, 3, 4]), bias: new Float32Array([0.5, -0.5]), relu: false }] };
}

async function probe(run) {
  const out = await run(probeModel(), new Float32Array([1, 1]), 1);
  if (Math.abs(out[0] - 4.5) > 1e-5 || Math.abs(out[1] - 5.5) > 1e-5) throw new Error(`probe computed ${out[0]}, ${out[1]}`);
}

async function chooseBackend() {
  const webnn = { available: false, present: Boolean(navigator.ml) };
  const webgpu = { available: false, present: Boolean(navigator.gpu) };
  const backends = ["js"];
  if (ALLOWED.includes("webnn")) {
    try {
      nn.context = await createNnContext();
      await probe(runNn);
      webnn.available = true;
      backends.unshift("webnn");
    } catch (err) {
      nn.context = null;
      webnn.reason = String(err);
    }
  } else webnn.reason = "not allowed by the page URL";
  if (ALLOWED.includes("webgpu")) {
    try {
      await createDevice();
      await probe(runGpu);
      Object.assign(webgpu, adapterInfo(gpu.adapter));
      backends.splice(backends.length - 1, 0, "webgpu");
    } catch (err) {
      if (gpu.device) gpu.device.destroy();
      gpu.device = null;
      webgpu.available = false;
      webgpu.reason = String(err);
    }
  } else webgpu.reason = "not allowed by the page URL";
  backend = backends.find((b) => ALLOWED.includes(b)) || "js";
  capabilities = {
    backends,
    webgpu,
    webnn,
    wasm: typeof WebAssembly === "object",
    cross_origin_isolated: Boolean(self.crossOriginIsolated),
    hardware_concurrency: navigator.hardwareConcurrency || null,
  };
}

async function compute(model, x, batch) {
  if (backend === "webnn") return { out: await runNn(model, x, batch), ran: "webnn" };
  if (backend === "webgpu") return { out: await runGpu(model, x, batch), ran: "webgpu" };
  return { out: runJs(model, x, batch), ran: "js" };
}

// --- binary frames ---------------------------------------------------------------------------------

const align8 = (n) => (n + 7) & ~7;

const FRAME_TYPES = ["", "infer", "result"]; // version 2's type codes

function decodeFrame(buf) {
  const view = new DataView(buf);
  const magic = String.fromCharCode(view.getUint8(0), view.getUint8(1), view.getUint8(2), view.getUint8(3));
  if (magic === "PWT2") return decodeFrameV2(buf, view);
  if (magic !== "PWT1") throw new Error(`bad magic ${magic}`);
  const headLen = view.getUint32(4, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 8, headLen)));
  const base = align8(8 + headLen);
  const tensors = header.tensors.map((d) => {
    if (d.dtype !== "float32") throw new InputError(`dtype ${d.dtype} is not supported`);
    return { name: d.name, shape: d.shape, data: new Float32Array(buf.slice(base + d.offset, base + d.offset + d.nbytes)) };
  });
  return { header, tensors };
}

// Version 2: a fixed binary header (docs/protocol.md), then the same data section as version 1.
function decodeFrameV2(buf, view) {
  const type = FRAME_TYPES[view.getUint8(4)];
  if (!type) throw new Error(`bad frame type code ${view.getUint8(4)}`);
  const count = view.getUint8(5);
  const modelLen = view.getUint8(6);
  const backendLen = view.getUint8(7);
  const id = Number(view.getBigUint64(8, true));
  const text = new TextDecoder("utf-8", { fatal: true });
  let at = 24;
  const model = text.decode(new Uint8Array(buf, at, modelLen));
  at += modelLen + backendLen;
  const shapes = [];
  for (let i = 0; i < count; i++) {
    const nameLen = view.getUint8(at);
    const rank = view.getUint8(at + 1);
    const shape = [];
    for (let r = 0; r < rank; r++) shape.push(view.getUint32(at + 2 + 4 * r, true));
    at += 2 + 4 * rank;
    shapes.push({ name: text.decode(new Uint8Array(buf, at, nameLen)), shape });
    at += nameLen;
  }
  let offset = align8(at);
  const tensors = shapes.map(({ name, shape }) => {
    const nbytes = 4 * shape.reduce((a, b) => a * b, 1);
    if (offset + nbytes > buf.byteLength) throw new InputError(`tensor ${name} runs past the frame`);
    const data = new Float32Array(buf.slice(offset, offset + nbytes));
    offset = align8(offset + nbytes);
    return { name, shape, data };
  });
  return { header: { type, id, model }, tensors };
}

function encodeFrameV2(header, tensors) {
  const utf8 = new TextEncoder();
  const model = utf8.encode(header.model);
  const backend = utf8.encode(header.backend || "");
  const names = tensors.map((t) => utf8.encode(t.name));
  let size = 24 + model.length + backend.length;
  tensors.forEach((t, i) => (size += 2 + 4 * t.shape.length + names[i].length));
  const base = align8(size);
  let end = base;
  const offsets = tensors.map((t) => {
    const at = end;
    end = align8(end + t.data.byteLength);
    return at;
  });
  const buf = new ArrayBuffer(end);
  const view = new DataView(buf);
  const bytes = new Uint8Array(buf);
  bytes.set([0x50, 0x57, 0x54, 0x32]); // "PWT2"
  view.setUint8(4, FRAME_TYPES.indexOf(header.type));
  view.setUint8(5, tensors.length);
  view.setUint8(6, model.length);
  view.setUint8(7, backend.length);
  view.setBigUint64(8, BigInt(header.id), true);
  view.setFloat64(16, header.elapsed_ms || 0, true);
  let at = 24;
  bytes.set(model, at);
  bytes.set(backend, at + model.length);
  at += model.length + backend.length;
  tensors.forEach((t, i) => {
    view.setUint8(at, names[i].length);
    view.setUint8(at + 1, t.shape.length);
    t.shape.forEach((d, r) => view.setUint32(at + 2 + 4 * r, d, true));
    at += 2 + 4 * t.shape.length;
    bytes.set(names[i], at);
    at += names[i].length;
  });
  tensors.forEach((t, i) => new Float32Array(buf, offsets[i], t.data.length).set(t.data));
  return buf;
}

function encodeFrame(header, tensors) {
  if (frameVersion >= 2) return encodeFrameV2(header, tensors);
  let offset = 0;
  const descriptors = tensors.map((t) => {
    const d = { name: t.name, dtype: "float32", shape: t.shape, offset, nbytes: t.data.byteLength };
    offset = align8(offset + t.data.byteLength);
    return d;
  });
  const head = new TextEncoder().encode(JSON.stringify({ ...header, tensors: descriptors }));
  const base = align8(8 + head.length);
  const buf = new ArrayBuffer(base + offset);
  const view = new DataView(buf);
  new Uint8Array(buf, 0, 4).set([0x50, 0x57, 0x54, 0x31]); // "PWT1"
  view.setUint32(4, head.length, true);
  new Uint8Array(buf, 8, head.length).set(head);
  tensors.forEach((t, i) => new Float32Array(buf, base + descriptors[i].offset, t.data.length).set(t.data));
  return buf;
}

// --- the connection ----------------------------------------------------------------------------------

function send(message) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(typeof message === "string" || message instanceof ArrayBuffer ? message : JSON.stringify(message));
}

function log(level, message) {
  send({ type: "log", level, message });
}

function connect() {
  if (stopped) return;
  const socket = new WebSocket(`ws://${location.host}/ws?worker=${encodeURIComponent(WORKER_ID)}`);
  socket.binaryType = "arraybuffer";
  ws = socket;
  socket.onopen = async () => {
    frameVersion = 1; // until this socket's welcome
    await backendChosen; // the hello names the backend; the socket opened while it was chosen
    if (ws !== socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(
      JSON.stringify({
        type: "hello",
        protocol: PROTOCOL,
        token: TOKEN,
        worker_id: WORKER_ID,
        instance: INSTANCE,
        browser: { name: browserName(), version: browserVersion(), user_agent: navigator.userAgent },
        backend,
        capabilities,
        hooks: HOOKS,
      }),
    );
  };
  socket.onmessage = (ev) => {
    handle(ev.data).catch((err) => log("error", `unhandled: ${err && err.stack ? err.stack : err}`));
  };
  socket.onclose = (ev) => {
    if (ws !== socket) return;
    ws = null;
    if (TERMINAL_CLOSE_CODES.has(ev.code)) {
      stopped = true;
      const why = ev.code === 4410 ? "declared dead by the pool, to be reloaded" : "refused by the bridge";
      status(`${why} (${ev.code} ${ev.reason}); not reconnecting`);
      return;
    }
    status(`disconnected (${ev.code}); reconnecting in ${backoffMs} ms`);
    setTimeout(connect, backoffMs);
    backoffMs = Math.min(backoffMs * 2, BACKOFF_MAX_MS);
  };
}

function browserName() {
  const ua = navigator.userAgent;
  if (/Edg\//.test(ua)) return "edge";
  if (/Firefox\//.test(ua)) return "firefox";
  if (/Chrom(e|ium)\//.test(ua)) return "chromium";
  return "unknown";
}

function browserVersion() {
  const m = navigator.userAgent.match(/(?:Edg|Firefox|Chrome|Chromium)\/([\d.]+)/);
  return m ? m[1] : "";
}

function errorKind(err) {
  if (err instanceof GpuError) return err.kind;
  if (err instanceof InputError) return "input";
  if (err instanceof UnknownModelError) return "unknown_model";
  if (err && err.name === "OperationError" && !gpu.device) return "device_lost";
  return "internal";
}

async function handle(data) {
  let msg;
  let tensors = [];
  try {
    if (data instanceof ArrayBuffer) {
      const frame = decodeFrame(data);
      msg = frame.header;
      tensors = frame.tensors;
    } else {
      msg = JSON.parse(data);
    }
  } catch (err) {
    send({ type: "error", id: null, kind: "malformed", message: String(err) });
    return;
  }
  const id = msg.id === undefined ? null : msg.id;
  try {
    switch (msg.type) {
      case "welcome":
        backoffMs = BACKOFF_MIN_MS;
        frameVersion = msg.protocol >= 2 ? 2 : 1;
        status(`connected as ${WORKER_ID} (generation ${msg.generation}, backend ${backend})`);
        return;
      case "rebind": {
        // A warm spare promoted to a connection: from now on this page is that worker id (its
        // reconnects say so), and its URL names it, so that a reload of the tab stays it.
        WORKER_ID = String(msg.worker_id);
        TOKEN = String(msg.token);
        const url = new URL(location.href);
        url.searchParams.set("worker", WORKER_ID);
        url.searchParams.delete("token");
        history.replaceState(null, "", url.toString());
        status(`promoted: connected as ${WORKER_ID} (generation ${msg.generation}, backend ${backend})`);
        return;
      }
      case "error":
        status(`bridge error: ${msg.kind}: ${msg.message}`);
        return;
      case "load_model":
        return await loadModel(id, msg);
      case "unload_model": {
        const model = models.get(msg.model);
        if (model) releaseModel(model);
        models.delete(msg.model);
        return send({ type: "unloaded", id, model: msg.model });
      }
      case "infer":
        return await infer(id, msg, tensors);
      case "ping":
        return await ping(id, msg);
      case "memory":
        return send(memoryReport(id));
      case "hook":
        return hook(id, msg);
      default:
        return send({ type: "error", id, kind: "unknown_type", message: `unknown message type ${msg.type}` });
    }
  } catch (err) {
    send({ type: "error", id, kind: errorKind(err), message: String(err && err.message ? err.message : err) });
  }
}

async function loadModel(id, msg) {
  const started = performance.now();
  const model = { kind: msg.kind, layers: buildLayers(msg.kind, msg.options || {}), nn: null };
  const previous = models.get(msg.model);
  if (previous) releaseModel(previous);
  if (backend === "webgpu" && gpu.device) await withErrorScopes(gpu.device, async () => uploadModel(model));
  models.set(msg.model, model);
  send({ type: "loaded", id, model: msg.model, backend, elapsed_ms: performance.now() - started });
}

async function infer(id, msg, tensors) {
  const started = performance.now();
  const model = models.get(msg.model);
  if (!model) throw new UnknownModelError(`model '${msg.model}' is not loaded`);
  if (tensors.length !== 1 || tensors[0].name !== "input") throw new InputError("expects one tensor named 'input'");
  const input = tensors[0];
  const width = model.layers[0].inputs;
  if (input.shape.length !== 2 || input.shape[1] !== width) {
    throw new InputError(`${model.kind}: input must have shape [batch, ${width}], not [${input.shape}]`);
  }
  const batch = input.shape[0];
  const { out, ran } = await compute(model, input.data, batch);
  const outputs = model.layers[model.layers.length - 1].outputs;
  const header = { type: "result", id, model: msg.model, backend: ran, elapsed_ms: performance.now() - started };
  send(encodeFrame(header, [{ name: "output", shape: [batch, outputs], data: out }]));
}

async function ping(id, msg) {
  const started = performance.now();
  let gpuState = "none";
  const deadline = Math.max(1, Number(msg.gpu_deadline_ms) || 500);
  if (backend === "webgpu" && !gpu.device && gpu.recreating) {
    // A device being recreated after a loss is not lost: give it the ping's deadline to come back.
    await Promise.race([gpu.recreating, new Promise((resolve) => setTimeout(resolve, deadline))]);
  }
  const device = backend === "webgpu" ? gpu.device : null;
  if (backend === "webgpu" && !device) gpuState = "lost";
  if (device) {
    // A tiny submission proves the GPU queue still makes progress, not just that the device exists.
    device.queue.submit([device.createCommandEncoder().finish()]);
    gpuState = await Promise.race([
      device.queue.onSubmittedWorkDone().then(() => "ok"),
      gpu.lost.then(() => "lost"),
      new Promise((resolve) => setTimeout(() => resolve("timeout"), deadline)),
    ]);
  }
  send({ type: "pong", id, backend, gpu: gpuState, elapsed_ms: performance.now() - started });
}

function memoryReport(id) {
  const mem = performance.memory;
  return {
    type: "memory",
    id,
    js_heap_used: mem ? mem.usedJSHeapSize : null,
    js_heap_total: mem ? mem.totalJSHeapSize : null,
    gpu_buffer_bytes: Math.max(0, gpu.bufferBytes),
    test_allocated_bytes: testAllocations.reduce((sum, b) => sum + b.byteLength, 0),
    models: Array.from(models.keys()),
  };
}

function hook(id, msg) {
  if (!HOOKS) return send({ type: "error", id, kind: "unsupported", message: "test hooks are not enabled" });
  const action = msg.action;
  if (action === "hang") {
    send({ type: "hook_done", id, action });
    const until = Date.now() + 1000 * (Number(msg.seconds) || 5);
    setTimeout(() => {
      // Busy loop: the JavaScript thread answers nothing until it ends.
      while (Date.now() < until);
    }, 0);
  } else if (action === "destroy_device") {
    if (!gpu.device) return send({ type: "error", id, kind: "unsupported", message: "no GPU device" });
    send({ type: "hook_done", id, action });
    gpu.device.destroy();
  } else if (action === "allocate") {
    const bytes = Math.floor((Number(msg.mb) || 1) * 1024 * 1024);
    const buf = new ArrayBuffer(bytes);
    new Uint8Array(buf).fill(1); // touch every page, so the memory is really committed
    testAllocations.push(buf);
    send({ type: "hook_done", id, action });
  } else if (action === "drop_socket") {
    send({ type: "hook_done", id, action });
    if (ws) ws.close(4000, "test hook: drop socket");
  } else {
    send({ type: "error", id, kind: "unsupported", message: `no test hook '${action}'` });
  }
}

// Settles once the backend is chosen; chooseBackend never rejects (a backend that fails is
// recorded in the capabilities and the next one tried, down to plain JavaScript).
let backendChosen = null;

async function main() {
  status("choosing a backend; connecting");
  backendChosen = chooseBackend();
  connect(); // the socket's handshake runs while the backend is chosen
  await backendChosen;
  status(`backend ${backend}`);
}

main();
