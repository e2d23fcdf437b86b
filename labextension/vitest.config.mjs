import { defineConfig } from 'vitest/config';

// The modules under test are plain TypeScript (no JupyterLab imports), so Node is enough.
export default defineConfig({
  test: { environment: 'node', include: ['src/__tests__/**/*.spec.ts'] }
});
