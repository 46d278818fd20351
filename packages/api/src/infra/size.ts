import { InvalidArgumentError } from '../errors.js';

const sizeUnits: Readonly<Record<string, number>> = {
  '': 1,
  k: 1e3,
  m: 1e6,
  g: 1e9,
  t: 1e12,
  ki: 1024,
  mi: 1024 ** 2,
  gi: 1024 ** 3,
  ti: 1024 ** 4,
};

/**
 * Parses a size into bytes: a non-negative number, or a number with a decimal (`10G`, `10GB`) or binary
 * (`4Gi`, `512MiB`) unit; `b`/`B` alone means bytes. Fractions are allowed and floored (`1.5Gi`). Anything else
 * throws an {@link InvalidArgumentError} on `field` that quotes a short prefix of the value.
 */
export function parseByteSize(value: string | number, field = 'size'): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new InvalidArgumentError(field, `size ${value} must be >= 0`);
    return Math.floor(value);
  }
  const match = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]{0,3})\s*$/.exec(value);
  const unit = match ? sizeUnits[match[2]!.toLowerCase().replace(/b$/, '')] : undefined;
  if (!match || unit === undefined) {
    throw new InvalidArgumentError(field, `'${value.slice(0, 32)}' is not a size (e.g. 4Gi, 512MiB, 10G)`);
  }
  return Math.floor(Number(match[1]) * unit);
}
