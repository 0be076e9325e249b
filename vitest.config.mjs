import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Each file in its own process: userfaultfd, mappings and worker threads stay per file.
    pool: 'forks',
    // Two cores: files that page heavily would only slow each other down and blur failures.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 60_000,
    teardownTimeout: 30_000,
  },
});
