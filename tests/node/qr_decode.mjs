// Decode a QR code from RGBA pixels with jsQR 1.4.0. stdin: {width, height, data: [r,g,b,a,...]}.
// Prints {text} (null when no code was found).
import jsQR from "jsqr";

const input = JSON.parse(await new Promise((ok) => {
  let s = ""; process.stdin.on("data", (d) => (s += d)); process.stdin.on("end", () => ok(s));
}));
const code = jsQR(Uint8ClampedArray.from(input.data), input.width, input.height);
console.log(JSON.stringify({ text: code ? code.data : null }));
