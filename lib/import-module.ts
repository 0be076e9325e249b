// import() for code a user names (policy modules, guides, tenant modules), which may be ES modules.
// tsc turns a literal import() into require() in this CommonJS build, so it is called through Function.
export const importModule = new Function('specifier', 'return import(specifier)') as (
  specifier: string,
) => Promise<Record<string, unknown>>;
