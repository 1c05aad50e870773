#!/usr/bin/env node
// A styletrain client in Node.js: loads proto/styletrain/v1/styletrain.proto as it is (no generated
// code), then calls ListStyles, Stylize and a StylizeStream of a few frames, and prints the results.
//
//   npm install                      # in examples/node
//   node client.js HOST:PORT [IMAGE] [--tls-ca CA.pem]
//
// IMAGE is a JPEG/PNG/WebP file; without one, a 48x32 PNG gradient made here is sent. With
// --tls-ca, the channel uses TLS trusting that CA; $STYLETRAIN_TOKEN, if set, is sent as
// "authorization: Bearer <token>".
'use strict';

const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_DIR = path.resolve(__dirname, '..', '..', 'proto');

function loadService() {
  const definition = protoLoader.loadSync(path.join(PROTO_DIR, 'styletrain', 'v1', 'styletrain.proto'), {
    includeDirs: [PROTO_DIR], // google/rpc/status.proto resolves from the vendored copy
    keepCase: false, // fields in camelCase: styleBlend, frameId, maxSide
    longs: String, // uint64 frame ids as strings
    enums: String,
    defaults: true,
    oneofs: true, // a virtual field names the member set: response.result === 'response' | 'error'
  });
  return grpc.loadPackageDefinition(definition).styletrain.v1.StyleTransferService;
}

// --- a tiny PNG encoder, so the example needs no image file --------------------------------------
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

function gradientPng(width, height) {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // RGB
  const rows = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + 3 * width); // filter byte 0, then RGB
    for (let x = 0; x < width; x++) {
      row[1 + 3 * x] = Math.round((255 * x) / (width - 1));
      row[2 + 3 * x] = Math.round((255 * y) / (height - 1));
      row[3 + 3 * x] = 128;
    }
    rows.push(row);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', zlib.deflateSync(Buffer.concat(rows))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

// --- the calls ------------------------------------------------------------------------------------
function parseArgs(argv) {
  const args = { positional: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--tls-ca') args.tlsCa = argv[++i];
    else args.positional.push(argv[i]);
  }
  if (args.positional.length < 1 || args.positional.length > 2) {
    console.error('usage: node client.js HOST:PORT [IMAGE] [--tls-ca CA.pem]');
    process.exit(2);
  }
  return args;
}

function unary(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + 60_000 }, (error, response) =>
      error ? reject(error) : resolve(response));
  });
}

function stream(client, frames, metadata) {
  return new Promise((resolve, reject) => {
    const call = client.StylizeStream(metadata, { deadline: Date.now() + 60_000 });
    const responses = [];
    call.on('data', (response) => responses.push(response));
    call.on('error', reject);
    call.on('end', () => resolve(responses));
    for (const frame of frames) call.write(frame);
    call.end();
  });
}

function describe(result) {
  return `${result.width}x${result.height} ${result.format} from model ${result.model} ` +
    `(${result.backend} on ${result.device}, ${result.inferenceMs.toFixed(1)} ms inference, ` +
    `${result.image.length} bytes)`;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const [address, imagePath] = args.positional;
  const credentials = args.tlsCa
    ? grpc.credentials.createSsl(fs.readFileSync(args.tlsCa))
    : grpc.credentials.createInsecure();
  const Service = loadService();
  const client = new Service(address, credentials, {
    'grpc.max_receive_message_length': 32 * 1024 * 1024,
    'grpc.max_send_message_length': 32 * 1024 * 1024,
  });
  const metadata = new grpc.Metadata();
  if (process.env.STYLETRAIN_TOKEN) metadata.set('authorization', `Bearer ${process.env.STYLETRAIN_TOKEN}`);
  const image = imagePath ? fs.readFileSync(imagePath) : gradientPng(48, 32);

  try {
    const { models } = await unary(client, 'ListStyles', {}, metadata);
    for (const model of models) console.log(`model ${model.name}: ${model.styles.join(', ')}`);
    const multi = models.find((m) => m.styles.length > 1) || models[0];
    const style = multi.styles[0];

    const one = await unary(client, 'Stylize', {
      image, style, options: { format: 'IMAGE_FORMAT_PNG' },
    }, metadata);
    console.log(`Stylize ${style}: ${describe(one)}`);

    const blend = Object.fromEntries(multi.styles.slice(0, 2).map((s, i) => [s, i === 0 ? 0.7 : 0.3]));
    const frames = [
      { frameId: '1', request: { image, style } },
      { frameId: '2', request: { image, styleBlend: { weights: blend }, model: multi.name } },
      { frameId: '3', request: { image, style: 'no_such_style' } }, // answered with its own error
    ];
    for (const response of await stream(client, frames, metadata)) {
      if (response.result === 'response') {
        console.log(`frame ${response.frameId}: ${describe(response.response)}`);
      } else {
        const code = Object.keys(grpc.status).find((k) => grpc.status[k] === response.error.code);
        console.log(`frame ${response.frameId}: error ${code}: ${response.error.message}`);
      }
    }
  } catch (error) {
    console.error(`${address}: ${grpc.status[error.code] || error.code}: ${error.details || error.message}`);
    process.exitCode = 1;
  } finally {
    client.close();
  }
}

main();
