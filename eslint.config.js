import js from '@eslint/js';
import nx from '@nx/eslint-plugin';
import prettier from 'eslint-config-prettier';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      '**/dist/**',
      '**/out-tsc/**',
      '**/node_modules/**',
      '**/src/generated/**',
      '**/vitest.config.ts',
      '**/test-report.json',
      '.nx/**',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    plugins: { '@nx': nx },
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'separate-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'warn',
      'no-restricted-syntax': [
        'error',
        { selector: 'ExportDefaultDeclaration', message: 'Use named exports (no default exports).' },
        {
          selector: 'ExportNamedDeclaration > ExportSpecifier[exported.name="default"]',
          message: 'Use named exports.',
        },
      ],
      '@nx/enforce-module-boundaries': [
        'error',
        {
          allow: [],
          banTransitiveDependencies: false,
          depConstraints: [
            { sourceTag: 'scope:api', onlyDependOnLibsWithTags: [] },
            { sourceTag: 'scope:nsinsider', onlyDependOnLibsWithTags: [] },
            { sourceTag: 'scope:plugin', onlyDependOnLibsWithTags: ['scope:api', 'scope:testing'] },
            { sourceTag: 'scope:manager', onlyDependOnLibsWithTags: ['scope:api', 'scope:nsinsider'] },
            { sourceTag: 'scope:daemon', onlyDependOnLibsWithTags: ['scope:api', 'scope:nsinsider'] },
            {
              sourceTag: 'scope:testing',
              onlyDependOnLibsWithTags: ['scope:api', 'scope:manager', 'scope:daemon', 'scope:nsinsider'],
            },
            { sourceTag: 'scope:integration', onlyDependOnLibsWithTags: ['*'] },
          ],
        },
      ],
    },
  },
  {
    // Plugins may use the public test kit only from their tests, never from shipped code.
    files: ['packages/storage-*/src/**/*.ts'],
    ignores: ['**/*.spec.ts', '**/test-support/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['@workbay/testing', '@workbay/testing/*'], message: 'Plugins import only @workbay/api.' },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.spec.ts', '**/*.bench.ts'],
    rules: { '@typescript-eslint/no-non-null-assertion': 'off', '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { globals: { process: 'readonly', console: 'readonly' } },
  },
  prettier,
);
