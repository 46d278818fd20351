import { defineConfig } from 'vitest/config';

// Config files are the one place a default export is required (vitest loads it that way).
export default defineConfig({
  test: {
    include: ['src/**/*.spec.ts'],
    environment: 'node',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
