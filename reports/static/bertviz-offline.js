/* bertviz's head and model views, offline.
 *
 * bertviz's scripts call require.config() with d3 5 and jQuery 2 on a CDN, then
 * requirejs(['jquery', 'd3'], callback). These pages load jQuery and d3 from local files
 * (the XStatic packages) before this file, so the two calls are answered here from those
 * globals and no request leaves the page. d3 3 lacks one name the model view uses,
 * d3.schemeCategory10; it is the same ten colours as d3.scale.category10().
 */
(function () {
  "use strict";
  var d3 = window.d3;
  if (!d3.schemeCategory10) {
    d3.schemeCategory10 = d3.scale.category10().range();
  }
  var modules = { jquery: window.jQuery, d3: d3 };
  window.require = { config: function () {} };
  window.requirejs = function (names, callback) {
    callback.apply(null, names.map(function (name) {
      if (!(name in modules)) { throw new Error("bertviz-offline: no local module " + name); }
      return modules[name];
    }));
  };
  /* The attention of one run on one example is written once, as JSON, in a
   * <script type="application/json"> element; both views read it from there. */
  window.interpBertvizParams = function (dataId, extra) {
    var data = JSON.parse(document.getElementById(dataId).textContent);
    var params = { attention: [{ name: "All", attn: data.attn, left_text: data.tokens, right_text: data.tokens }],
                   default_filter: "0" };
    Object.keys(extra).forEach(function (key) { params[key] = extra[key]; });
    return params;
  };
})();
