/* A wasi:http handler in C: answers every request with "hello from c".
 * Built by ../build.sh into a WASI 0.2 component (wit-bindgen C bindings for
 * wasi:http/proxy, clang + wasi-libc, the preview-1 reactor adapter). */
#include <stdbool.h>
#include <stdint.h>

#include "proxy.h"

static const char BODY[] = "hello from c\n";

static proxy_list_u8_t bytes(const char *s, size_t n) {
  proxy_list_u8_t l = {(uint8_t *)s, n};
  return l;
}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
  wasi_http_types_incoming_request_drop_own(request);

  wasi_http_types_tuple2_field_name_field_value_t content_type = {
      .f0 = {(uint8_t *)"content-type", 12},
      .f1 = {(uint8_t *)"text/plain", 10},
  };
  wasi_http_types_list_tuple2_field_name_field_value_t list = {&content_type, 1};
  wasi_http_types_own_fields_t headers;
  wasi_http_types_header_error_t header_error;
  if (!wasi_http_types_static_fields_from_list(&list, &headers, &header_error)) {
    headers = wasi_http_types_constructor_fields();
  }
  wasi_http_types_own_outgoing_response_t response =
      wasi_http_types_constructor_outgoing_response(headers);
  wasi_http_types_own_outgoing_body_t body;
  wasi_http_types_method_outgoing_response_body(
      wasi_http_types_borrow_outgoing_response(response), &body);

  wasi_http_types_result_own_outgoing_response_error_code_t result = {
      .is_err = false, .val = {.ok = response}};
  wasi_http_types_static_response_outparam_set(response_out, &result);

  wasi_http_types_own_output_stream_t stream;
  wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body), &stream);
  proxy_list_u8_t text = bytes(BODY, sizeof(BODY) - 1);
  wasi_io_streams_stream_error_t stream_error;
  wasi_io_streams_method_output_stream_blocking_write_and_flush(
      wasi_io_streams_borrow_output_stream(stream), &text, &stream_error);
  wasi_io_streams_output_stream_drop_own(stream);

  wasi_http_types_error_code_t finish_error;
  wasi_http_types_static_outgoing_body_finish(body, NULL, &finish_error);
}
