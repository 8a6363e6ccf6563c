import { defineConfig } from "vite";

// The bundle is embedded into the murmur binary (tools/build.rs): one page, hashed assets,
// nothing loaded from elsewhere at run time.
export default defineConfig({
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 1000 },
  server: { fs: { allow: ["..", "../../examples"] } },
});
