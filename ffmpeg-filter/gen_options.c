/*
 * gen_options: writes the tokenflow filter's AVOption rows from libtokenflow's settings table.
 *
 *   gen_options > libavfilter/vf_tokenflow_options.h
 *
 * Run by ffmpeg-filter/build against the installed library, so the filter's options (names, help,
 * defaults, ranges, choices) are the library's: a setting added to the library appears in
 * `ffmpeg -h filter=tokenflow` after a rebuild, without an edit of vf_tokenflow.c. The output is
 * generated into the FFmpeg build tree and never committed.
 *
 * The header defines
 *   TOKENFLOW_NB_OPTIONS                  the number of settings (one value slot each), and
 *   TOKENFLOW_OPTIONS(VALUE_OFFSET, FLAGS) the AVOption rows, where VALUE_OFFSET(i) is the offset of the
 *                                         i-th value slot in the filter's private context.
 * Types: STRING and SIZE -> AV_OPT_TYPE_STRING (the library parses sizes); INT -> AV_OPT_TYPE_INT, or
 * AV_OPT_TYPE_INT64 when the range does not fit an int; FLOAT -> AV_OPT_TYPE_DOUBLE; CHOICE ->
 * AV_OPT_TYPE_INT holding the choice's index, with one AV_OPT_TYPE_CONST row per choice.
 *
 * Part of the TokenFlow engine project. The generated header is compiled into FFmpeg; it and this
 * program may be used under the terms of the GNU Lesser General Public License, version 2.1 or later.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tokenflow.h>

static int fail(const TFOption *option, const char *problem)
{
    fprintf(stderr, "gen_options: setting '%s': %s\n", option->name ? option->name : "(null)", problem);
    return 1;
}

/* Writes s as a C string literal (NULL as NULL). Every byte that is not plain printable ASCII becomes a
 * three-digit octal escape, which never swallows the next character; '?' is escaped too, because FFmpeg
 * compiles with -std=c11, where "??x" would be a trigraph. */
static void put_string(const char *s)
{
    if (!s) {
        fputs("NULL", stdout);
        return;
    }
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\' || *p == '?')
            printf("\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f)
            printf("\\%03o", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

/* A range bound as a C double constant (the library may leave a FLOAT range unbounded). */
static void put_bound(double d)
{
    if (isinf(d))
        fputs(d < 0 ? "-DBL_MAX" : "DBL_MAX", stdout);
    else
        printf("%.17g", d);
}

static int parse_int(const char *text, long long *out)
{
    char *end;
    errno = 0;
    *out = strtoll(text, &end, 10);
    return *text && !*end && !errno;
}

/* Option names go into filter strings (name=value:...), so they must be plain words. */
static int plain_word(const char *s)
{
    if (!s || !*s)
        return 0;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == strlen(s);
}

/* One option's rows (each followed by " \" and a newline: the rows form one macro). */
static int put_option(int index, const TFOption *o)
{
    const char *def = o->default_value ? o->default_value : "";
    long long i;
    double d;
    char *end;
    int n;

    if (!plain_word(o->name))
        return fail(o, "the name is not a plain word (letters, digits, _)");
    printf("    { ");
    put_string(o->name);
    printf(", ");
    put_string(o->help);
    printf(", VALUE_OFFSET(%d), ", index);

    switch (o->type) {
    case TF_OPTION_STRING:
    case TF_OPTION_SIZE:
        /* NULL for "": the filter then leaves the setting alone, so the library's default applies. */
        printf("AV_OPT_TYPE_STRING, { .str = ");
        put_string(*def ? def : NULL);
        printf(" }, 0, 0, FLAGS }, \\\n");
        return 0;

    case TF_OPTION_INT:
        if (!(o->min <= o->max))
            return fail(o, "the range is empty or not a number");
        if (!parse_int(def, &i) || i < o->min || i > o->max)
            return fail(o, "the default is not an integer in the range");
        printf("%s, { .i64 = %lld }, ", o->min >= INT_MIN && o->max <= INT_MAX ? "AV_OPT_TYPE_INT" : "AV_OPT_TYPE_INT64", i);
        put_bound(o->min);
        printf(", ");
        put_bound(o->max);
        printf(", FLAGS }, \\\n");
        return 0;

    case TF_OPTION_FLOAT:
        if (!(o->min <= o->max))
            return fail(o, "the range is empty or not a number");
        errno = 0;
        d = strtod(def, &end);
        if (!*def || *end || errno || !(d >= o->min && d <= o->max))
            return fail(o, "the default is not a number in the range");
        printf("AV_OPT_TYPE_DOUBLE, { .dbl = %.17g }, ", d);
        put_bound(o->min);
        printf(", ");
        put_bound(o->max);
        printf(", FLAGS }, \\\n");
        return 0;

    case TF_OPTION_CHOICE:
        if (!o->choices || !o->choices[0])
            return fail(o, "a choice without choices");
        for (n = 0; o->choices[n]; n++)
            if (!plain_word(o->choices[n]))
                return fail(o, "a choice is not a plain word (letters, digits, _)");
        /* The default is a choice's name, or its index. */
        for (i = 0; i < n && strcmp(o->choices[i], def); i++)
            ;
        if (i == n && (!parse_int(def, &i) || i < 0 || i >= n))
            return fail(o, "the default is not one of the choices");
        printf("AV_OPT_TYPE_INT, { .i64 = %lld }, 0, %d, FLAGS, ", i, n - 1);
        put_string(o->name);
        printf(" }, \\\n");
        for (int k = 0; k < n; k++) {
            printf("        { ");
            put_string(o->choices[k]);
            printf(", ");
            put_string(o->choice_help ? o->choice_help[k] : NULL);
            printf(", 0, AV_OPT_TYPE_CONST, { .i64 = %d }, 0, 0, FLAGS, ", k);
            put_string(o->name);
            printf(" }, \\\n");
        }
        return 0;

    default:
        return fail(o, "a type this generator does not know: teach ffmpeg-filter/gen_options.c about it");
    }
}

int main(void)
{
    const TFOption *o;
    int n;

    printf("/* Generated by ffmpeg-filter/gen_options from the settings table of libtokenflow %s; do not edit. */\n",
           tf_version_string());
    printf("/* TOKENFLOW_OPTIONS(VALUE_OFFSET, FLAGS): VALUE_OFFSET(i) is the offset of value slot i. */\n");
    printf("#define TOKENFLOW_OPTIONS(VALUE_OFFSET, FLAGS) \\\n");
    for (n = 0; (o = tf_option(n)); n++)
        if (put_option(n, o))
            return 1;
    printf("\n#define TOKENFLOW_NB_OPTIONS %d\n", n);
    if (n == 0) {
        fprintf(stderr, "gen_options: libtokenflow %s has no settings\n", tf_version_string());
        return 1;
    }
    return fflush(stdout) != 0 || ferror(stdout);
}
