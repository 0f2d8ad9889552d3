/** Body validation with zod: a failed parse is one ValidationError naming every bad field. */
import type { z } from 'zod';
import { ValidationError } from './errors.ts';

/** Parses with a schema or throws a ValidationError listing every problem. */
export function validate<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  const result = schema.safeParse(body);
  if (!result.success) {
    const issues = result.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
    throw new ValidationError(issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; '), issues);
  }
  return result.data;
}
