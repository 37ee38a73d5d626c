import fc from 'fast-check';

/** JSON values (any, arrays, objects) whose strings and keys come from `strings`. */
export function jsonValues(strings: fc.Arbitrary<string>): {
  value: fc.Arbitrary<unknown>;
  object: fc.Arbitrary<Record<string, unknown>>;
} {
  const values = fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: 'small' },
      strings,
      fc.integer(),
      fc.double({ noNaN: true, noDefaultInfinity: true }),
      fc.boolean(),
      fc.constant(null),
      tie('array'),
      tie('object'),
    ),
    array: fc.array(tie('value'), { maxLength: 4 }),
    object: fc.dictionary(strings, tie('value'), { maxKeys: 4 }),
  }));
  return { value: values.value, object: values.object as fc.Arbitrary<Record<string, unknown>> };
}
