/* Private: what green/ modules share about the running green task. */
#ifndef CF_GREEN_INTERNAL_H
#define CF_GREEN_INTERNAL_H

/* A pointer the running green task carries for whoever needs to know who it
 * works for (the green pool marks its workers); NULL outside green tasks or
 * when unset. Owner thread of the loop only. */
void *cf__green_tag(void);
void cf__green_set_tag(void *tag);

#endif
