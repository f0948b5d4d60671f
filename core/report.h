/* Private: report a failure nobody can be told about (see
 * cf_set_report_handler in cfutures/common.h). */
#ifndef CF_CORE_REPORT_H
#define CF_CORE_REPORT_H
void cf__report(const char *what, int code);
#endif
