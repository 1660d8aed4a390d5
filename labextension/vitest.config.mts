import { defineConfig } from 'vitest/config';

// Pure logic only (src/model.ts): no DOM, no Lab. The browser flows are tested in a real browser
// (tests/labextension/browser/).
export default defineConfig({
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node'
  }
});
