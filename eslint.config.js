// typescript-eslint with type-checked rules over every TypeScript source (issue 14
// item 6); prettier formats (.prettierrc.json) and eslint leaves layout to it. Browser
// files in web/ are plain ES modules, checked by the browser tests.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', 'bench/out/**', 'test/fixtures/**', 'web/**', '*.cjs', 'eslint.config.js'] },
  {
    files: ['**/*.ts'],
    extends: [...tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // Numbers and booleans in messages and URLs are what they look like.
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      // `_`-prefixed parameters are the ones an interface passes and this implementation does not need.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // Fastify route handlers and hooks are async by contract: Fastify awaits what they
    // return and sends a throw to the error handler, whether or not they await.
    files: ['api/**/*.ts'],
    rules: { '@typescript-eslint/require-await': 'off' },
  },
);
