/* commands.h - entry points of the subcommands (one file per group). */
#ifndef MS_CLI_COMMANDS_H
#define MS_CLI_COMMANDS_H

int ms_cli_header_inspect(int argc, char **argv);
int ms_cli_header_validate(int argc, char **argv);
int ms_cli_demo_chain(int argc, char **argv);
int ms_cli_pageserver(int argc, char **argv);
int ms_cli_demo_resume(int argc, char **argv);
int ms_cli_demo_sandbox(int argc, char **argv);
int ms_cli_vm_run(int argc, char **argv);
int ms_cli_vm_restore(int argc, char **argv);
int ms_cli_sandbox_start(int argc, char **argv);
int ms_cli_sandbox_pause(int argc, char **argv);
int ms_cli_sandbox_resume(int argc, char **argv);
int ms_cli_sandbox_ls(int argc, char **argv);
int ms_cli_sandbox_rm(int argc, char **argv);
int ms_cli_build_show(int argc, char **argv);
int ms_cli_build_metadata(int argc, char **argv);
int ms_cli_build_import(int argc, char **argv);
int ms_cli_build_export(int argc, char **argv);
int ms_cli_store_gc(int argc, char **argv);
int ms_cli_build_verify(int argc, char **argv);
int ms_cli_build_ls(int argc, char **argv);
int ms_cli_build_rm(int argc, char **argv);
int ms_cli_vm_pause(int argc, char **argv);
int ms_cli_vm_resume(int argc, char **argv);
int ms_cli_vm_snapshot(int argc, char **argv);
int ms_cli_vm_status(int argc, char **argv);

#endif
