'use strict';
// Guide for the `tree` workload: a node fills a page; Int32 0 is its child count, Int32s 1..count the
// byte offsets of its children. Answering every child lets the pager fetch a whole level at once.
function int32(page, at) {
  return page[at] | (page[at + 1] << 8) | (page[at + 2] << 16) | (page[at + 3] << 24);
}

module.exports.guide = function guide(page) {
  const count = int32(page, 0);
  if (count <= 0 || count > 15) return null;
  const children = new Array(count);
  for (let c = 0; c < count; c++) children[c] = int32(page, 4 + 4 * c) >>> 0;
  return children;
};
